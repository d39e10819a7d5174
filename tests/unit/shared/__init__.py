"""Unit tests of shared/ and of the tree itself: the journal on real files, web plumbing, logging, layout."""
