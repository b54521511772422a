"""Scale-out engines (`edgecls.scale`): batch inference on a Ray cluster; it needs the `ray` extra."""
