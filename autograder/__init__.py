"""The course's autograder: grades the assignments in CI against torch, in a sandbox."""
