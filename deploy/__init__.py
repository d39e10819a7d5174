"""Deployment helpers: the development runner, example configs and service units."""
