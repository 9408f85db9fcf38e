"""Transports to the world. Each is opened lazily by the Context and closed with it.

Heavy client libraries (paramiko/fabric, psycopg, redis, boto3) are imported
inside the connector that needs them, never at package import time.
"""
