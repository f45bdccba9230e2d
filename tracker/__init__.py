"""Object tracking with a bounded keyframe memory (plain Python over numpy; no Ray)."""
