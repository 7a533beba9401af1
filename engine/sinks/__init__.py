"""Frame sinks: recorder (MP4); preview bus and virtual camera come with the streaming runtime."""
