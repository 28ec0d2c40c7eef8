"""Hub I/O tests: the real huggingface_hub client against a loopback stand-in Hub."""
