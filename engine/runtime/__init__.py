"""Runtime: the streaming session (student + KV cache), the threaded pipeline, and what runs on it: the live
avatar (`live`), file rendering (`render`) and text to video (`say`)."""
