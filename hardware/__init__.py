"""The hardware models: what a chip can hold and how it computes, known to the simulator (sim/) and to the
backends (hw_backends/) alike, which never import each other. Imports nothing on import."""
