"""Tests of the plugin manager and of the pytest plugin for plugin authors."""
