"""Several bridges per partition: the lease that names the active one, and the state they share."""
