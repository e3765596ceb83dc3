"""Audio constants shared by every stage. Each one is derived from the others where it can be."""

SAMPLE_RATE = 16_000  # Hz: the rate every encoder here takes; sources resample to it
MIN_SEGMENT_S = 0.3  # s: shortest segment the model accepts (shorter speech carries little emotion)
MIN_SEGMENT_SAMPLES = int(MIN_SEGMENT_S * SAMPLE_RATE)  # 4800 samples
