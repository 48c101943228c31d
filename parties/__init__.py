"""The parties of a study and everything with a side effect: files, sockets,
command line and process lifetimes (the protocols never touch them)."""
