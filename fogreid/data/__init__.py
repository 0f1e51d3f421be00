"""Foggy vehicle data: image I/O, dataset readers, samplers, fog models, the generator."""
