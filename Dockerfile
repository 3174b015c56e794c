# LLM Scratch Lab as a CPU container, following the Hugging Face Spaces Docker
# conventions: non-root user with uid 1000, listening on 0.0.0.0:7860.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/home/user/.cache/huggingface \
    LLM_LAB_CHECKPOINTS=/home/user/app/checkpoints
WORKDIR /home/user/app

# The CPU build of PyTorch first (a plain `torch` from PyPI pulls several GB of CUDA),
# then the rest, which that torch already satisfies.
COPY --chown=user requirements.txt .
RUN pip install --user torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --user -r requirements.txt

COPY --chown=user . .

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4).status == 200 else 1)"

CMD ["python", "app.py"]
