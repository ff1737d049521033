"""NIR (the neuromorphic intermediate representation, nir 1.0.8): the writer and reader (`nir_io`: the public
names of `ir_to_nir`, `nir_to_ir`, `nir_file` and `file_format`) and the target (`target`, registered as `nir`)."""
