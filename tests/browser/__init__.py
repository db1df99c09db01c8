"""Tests that drive Debian Chromium through Playwright against a real voicegate."""
