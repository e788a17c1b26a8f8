"""Reviewing submitted work: approve (and pay), reject with feedback, reverse a rejection, auto-approve."""
