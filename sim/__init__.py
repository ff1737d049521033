"""Simulation of converted networks (float reference semantics and Loihi fixed point), parity and energy."""
