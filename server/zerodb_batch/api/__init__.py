"""One servicer per proto service: validate, call storage, build the reply."""
