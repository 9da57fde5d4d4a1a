"""Tests of pywebtransport.server."""
