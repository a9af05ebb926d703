"""Export of trained students for deployment (mfef_keras.export)."""
