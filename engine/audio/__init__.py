"""Audio in: loading any format (`io`, the 16 kHz clock and the 25 fps video clock), file sources and the
microphone (`sources`, `mic`), the models' front ends (`frontend`: Whisper speech features with voice
activity in `speech`, the log-mel in `features`), and the PulseAudio/PipeWire devices of the synced
microphone (`pulse`)."""
