"""Presenting results: the one table renderer the terminal summary and compare share."""
