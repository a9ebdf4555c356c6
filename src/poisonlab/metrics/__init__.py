"""Metrics the field uses: attack success (ASR, MASR, clean accuracy) and detection quality."""
