"""Layer C: the composition root and the runtime services around connections."""
