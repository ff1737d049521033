"""Spikformer -> typed spiking IR -> passes -> exporters."""
