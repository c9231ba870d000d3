"""Camera workers: capture, motion detection per door zone, evidence, face verification."""
