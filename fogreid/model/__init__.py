"""The SJDL network, its deploy wrapper and its checkpoints."""
