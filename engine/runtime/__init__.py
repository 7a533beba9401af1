"""Runtime: the motion stream (`stream`: student + KV cache), the threaded pipeline, and what runs on it: the
live avatar (`live`), file rendering (`render_file`) and text to video (`say`)."""
