"""`make demo`: the synthesized example corpus (`corpus`) and the job that
runs every stage on it (`job`)."""
