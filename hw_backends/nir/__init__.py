"""NIR (the neuromorphic intermediate representation, nir 1.0.8): the writer and reader (`nir_io`) and the
target (`target`, registered as `nir`)."""
