"""Where the live networks run: ONNX export (`export`), TensorRT engines (`tensorrt`), and the runners that
pick a backend and fall back (`runners`: torch, onnxruntime, TensorRT). Below `render` and `runtime`, above
`models`: it runs networks, it does not know what the renderer or the session do with them."""
