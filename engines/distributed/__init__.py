"""Distributed jobs run by torchrun: the preflight check and the Ulysses attention it tests."""
