"""How the loop's parts are reached and started: Kafka clients and topics, the embedded
broker and Redis, ``l2loop`` commands as child processes, which services a command talks
to, and the supervisor of ``l2loop up``. Below the agents and jobs, above schemas and
settings."""
