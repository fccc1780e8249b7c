# The team's MLflow tracking server: PostgreSQL backend store (psycopg 3, SQLAlchemy's default driver for postgresql://), S3 artifact store (boto3, MinIO).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install mlflow==3.17.2 psycopg[binary]==3.3.9 boto3==1.44.5 \
 && useradd --create-home --uid 1000 mlflow

USER 1000:1000
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
