"""Training: teachers, guidance calibration, student distillation, the refiner (data, training, evaluation)
and the loop plumbing."""
