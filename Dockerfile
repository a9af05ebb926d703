# Two images from one file.
#
#   Training (TensorFlow with CUDA 12, the `mfef` CLI):
#     docker build --target train -t mfef-train .
#     docker run --gpus all -v "$PWD/runs:/src/runs" mfef-train train
#
#   Inference (the default target): onnxruntime, numpy, pillow and click only, plus one model
#   exported at build time from SOURCE (a run or student directory in the build context, or a zoo name):
#     docker build --build-arg SOURCE=runs/digits-mfef -t mfef-predict .
#     docker run --rm -v "$PWD:/data" mfef-predict digit.png --top-k 3
#
#   Serving (the Open Inference Protocol on KServe's server, onnxruntime underneath, no TensorFlow):
#     docker build --target serve --build-arg SOURCE=runs/digits-mfef -t mfef-serve .
#     docker run --rm -p 8080:8080 mfef-serve
#
# The inference image has no TensorFlow and no Keras: the predict path imports only the four
# packages above, and the package itself is installed without its dependencies.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS train
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /src
COPY . .
RUN pip install ".[gpu]"
ENTRYPOINT ["mfef"]

# Export (validated against the Keras student: the build fails if parity fails) and the package wheel.
FROM train AS export
ARG SOURCE=resnet8_mfef.digits_s0
# Extra `mfef export` options, e.g. "--quantize int8 --validate-on digits".
ARG EXPORT_OPTIONS=""
RUN mfef export "${SOURCE}" --format onnx --out /model ${EXPORT_OPTIONS} \
    && pip wheel --no-deps --wheel-dir /wheels /src

# The serving image: predict's four packages plus the serve extra's server (not its test client); the same export
# at /model. `mfef` starts without TensorFlow or Keras (tests/test_serve.py checks the serve path imports neither).
FROM ${PYTHON_IMAGE} AS serve
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
ARG ONNXRUNTIME="onnxruntime>=1.20,<1.27"
RUN pip install "${ONNXRUNTIME}" numpy pillow click "kserve>=0.21,<0.22" "uvloop>=0.18"
COPY --from=export /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
COPY --from=export /model /model
RUN useradd --create-home serve
USER serve
EXPOSE 8080
# Every interface: inside a container, loopback would reach no one. SIGTERM (docker stop) drains requests.
ENTRYPOINT ["mfef", "serve", "/model", "--host", "0.0.0.0", "--port", "8080"]

FROM ${PYTHON_IMAGE} AS predict
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# CPU onnxruntime by default. For GPU inference use a CUDA 12 + cuDNN 9 base image and
# ONNXRUNTIME="onnxruntime-gpu==1.26.0" (the last CUDA 12 build); never install both.
ARG ONNXRUNTIME="onnxruntime>=1.20,<1.27"
RUN pip install "${ONNXRUNTIME}" numpy pillow click
COPY --from=export /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
COPY --from=export /model /model
RUN useradd --create-home predict
USER predict
WORKDIR /data
ENTRYPOINT ["python", "-m", "mfef_keras.export.predict_main", "/model"]
CMD ["--help"]
