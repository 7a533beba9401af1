"""Where frames go: `base` (Frame and the Sink protocol), the preview's frame bus, the virtual camera, the
recorder (crash-safe MP4), the synced microphone and VMC for VTuber rigs."""
