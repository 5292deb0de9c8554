"""Records of the artefacts: the exported graph's contract and the TensorRT engine's manifest.

Below both the exporters that write them and the runtimes that check them before loading, so
neither needs the other.
"""
