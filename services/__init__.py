"""Use cases: each one a function that loads, decides in the domain, and commits once."""
