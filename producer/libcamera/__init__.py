"""A libcamera camera (through picamera2) as a framebus source: see README.md."""
