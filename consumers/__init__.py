"""Ready consumer programs: monitor, motion detector, snapshot writer."""
