"""The networks as pure nn.Modules with their configs: audio encoder, conditions, transformer blocks, the
teachers, the causal student and its exportable chunk step (`student_step`), the refiner network, and loading
from safetensors."""
