"""Training: raw recordings -> a cleaned, transcribed dataset -> a trained voice, as the steps of one task."""
