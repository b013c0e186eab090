"""Running jobs locally: the runner, its run records, warm kernels and their fork server."""
