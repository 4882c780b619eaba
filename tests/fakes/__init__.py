"""Local fakes of external APIs (Compute Engine) for tests."""
