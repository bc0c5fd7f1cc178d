"""Vigil's pure model: no I/O, no framework, standard library only."""
