"""Unit tests of engine_hub: the catalog, the store and its packing, job logs, the page cache."""
