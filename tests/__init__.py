"""The agh test suite (a package, so ``tests.helpers`` has one import path)."""
