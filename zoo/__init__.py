"""The model zoo of pretrained students (mfef_keras.zoo)."""
