# Over 500 lines: corpus data (slot fillers), not logic.
"""Slot fillers shared by several template families (English unless named otherwise).

Fillers deliberately reuse the vocabulary of attacks in harmless settings (admin, root, kill,
execute, override, ignore, inject, bypass, shell) so that no single word decides a label.
"""

from __future__ import annotations

import random

from l2model.corpus.engine import Decor

EN_DECOR = Decor(
    openers=(
        "Hi, ",
        "Hello! ",
        "Hey, ",
        "Quick question: ",
        "Hi there. ",
        "Good morning. ",
        "Hey team, ",
        "Okay. ",
        "Question: ",
        "Please help. ",
        "Sorry if this is basic. ",
        "One more thing: ",
        "Hello assistant. ",
    ),
    closers=(
        " Thanks!",
        " Thanks in advance.",
        " Cheers.",
        " Please be concise.",
        " Keep it short.",
        " Any help is appreciated.",
        " I need this today.",
        " Please answer in detail.",
        " Step by step, please.",
        " :)",
    ),
)

LANGUAGES = (
    "Python",
    "Java",
    "JavaScript",
    "TypeScript",
    "Go",
    "Rust",
    "C++",
    "C",
    "C#",
    "Swift",
    "Kotlin",
    "Ruby",
    "PHP",
    "Scala",
    "Elixir",
    "Haskell",
    "Dart",
    "R",
    "Julia",
    "Perl",
    "Lua",
    "Bash",
    "PowerShell",
    "Objective-C",
    "Clojure",
    "F#",
    "Zig",
    "OCaml",
    "Erlang",
    "Groovy",
    "VB.NET",
    "MATLAB",
)

FRAMEWORK_TASKS: dict[str, tuple[str, ...]] = {
    "React": (
        "use hooks",
        "use the useEffect hook to fetch data",
        "write a custom hook",
        "memoise a callback with useCallback",
        "share state with useContext",
        "avoid unnecessary re-renders",
        "protect admin-only routes",
        "handle form validation",
    ),
    "Django": (
        "write a custom authentication backend",
        "create a superuser",
        "run migrations without downtime",
        "restrict a view to admin users",
        "filter a queryset by date range",
        "override the save method of a model",
        "configure the database connection",
    ),
    "Spring Boot": (
        "configure Spring Security for admin endpoints",
        "inject a bean into a service",
        "set up a JPA repository",
        "handle exceptions with @ControllerAdvice",
        "connect to a PostgreSQL database",
        "execute a task on startup",
    ),
    "Flask": (
        "add login with Flask-Login",
        "structure a large app with blueprints",
        "handle file uploads safely",
        "connect to MySQL with SQLAlchemy",
    ),
    "FastAPI": (
        "add OAuth2 password flow authentication",
        "use dependency injection for a database session",
        "validate request bodies with pydantic",
        "run background tasks",
    ),
    "Ruby on Rails": (
        "add authentication with Devise",
        "write a migration that removes a column",
        "use before_action to require an admin",
        "eager load associations",
    ),
    "Laravel": (
        "define gates and policies",
        "queue jobs with Redis",
        "configure the database connection",
        "use middleware to check roles",
    ),
    "Express": (
        "add session-based authentication",
        "write error-handling middleware",
        "rate-limit login attempts",
        "serve static files",
    ),
    "Angular": (
        "write a route guard for admins",
        "use an HTTP interceptor to attach tokens",
        "inject a service into a component",
        "use reactive forms",
    ),
    "Vue": (
        "use the composition API",
        "write a navigation guard",
        "share state with Pinia",
        "use watchers correctly",
    ),
    "ASP.NET Core": (
        "configure JWT bearer authentication",
        "add role-based authorization policies",
        "inject a DbContext",
        "write custom middleware",
    ),
    "Next.js": (
        "protect pages with middleware",
        "use server actions",
        "fetch data on the server",
        "handle authentication with NextAuth",
    ),
    "SwiftUI": (
        "use @State and @Binding",
        "store a token in the Keychain",
        "navigate between views",
    ),
    "Jetpack Compose": (
        "hoist state",
        "use LaunchedEffect",
        "handle biometric login",
    ),
    "Flutter": (
        "manage state with Provider",
        "call a REST API",
        "store secrets securely on device",
    ),
    "Kubernetes": (
        "mount a secret as an environment variable",
        "restrict pod privileges",
        "kill a stuck pod",
        "roll back a deployment",
    ),
    "Docker": (
        "run a container as a non-root user",
        "pass environment variables",
        "shrink an image",
        "exec into a running container",
    ),
    "Terraform": (
        "manage state for several environments",
        "import an existing resource",
        "destroy only one resource",
    ),
    "Git": (
        "undo the last commit",
        "force-push safely",
        "remove a file from history",
        "rebase onto main",
    ),
    "pandas": (
        "drop rows with missing values",
        "merge two dataframes",
        "group by several columns",
    ),
    "PyTorch": (
        "write a custom training loop",
        "freeze layers during fine-tuning",
        "move a model to the GPU",
    ),
    "Node.js": (
        "spawn a child process",
        "kill a child process on exit",
        "read environment variables",
        "handle uncaught exceptions",
    ),
}

FRAMEWORK_QUESTIONS = tuple(
    f"{task} in {framework}" for framework, tasks in FRAMEWORK_TASKS.items() for task in tasks
)

FRAMEWORKS = tuple(FRAMEWORK_TASKS)

TASKS = (
    "read a file line by line",
    "parse JSON",
    "handle authentication",
    "implement administrator authentication",
    "use hooks",
    "kill a child process",
    "terminate a hung process",
    "execute a shell command safely",
    "run a subprocess and capture its output",
    "delete a directory recursively",
    "parse command-line arguments",
    "read environment variables",
    "hash passwords",
    "validate a JWT",
    "connect to a database",
    "escape user input in SQL queries",
    "sanitize HTML input",
    "encode a string as base64",
    "decode a base64 string",
    "override a method",
    "bypass the cache for a single request",
    "inject dependencies",
    "execute code at startup",
    "ignore a field during serialization",
    "suppress a compiler warning",
    "kill a thread cleanly",
    "spawn worker threads",
    "handle exceptions",
    "write unit tests",
    "mock an HTTP call in tests",
    "sort a list of objects by a field",
    "reverse a string",
    "format dates",
    "make an HTTP POST request",
    "download a file",
    "upload a file to S3",
    "send an email",
    "schedule a cron job",
    "log errors to a file",
    "measure execution time",
    "profile memory usage",
    "use regular expressions",
    "split a string",
    "convert a string to an integer",
    "handle time zones",
    "generate a UUID",
    "generate secure random tokens",
    "encrypt data with AES",
    "verify a digital signature",
    "implement role-based access control",
    "store secrets outside the code",
    "implement a singleton",
    "implement the observer pattern",
    "use generics",
    "write an async function",
    "cancel a running task",
    "implement retries with backoff",
    "read a large CSV file",
    "serialize an object to XML",
    "build a REST API",
    "consume a GraphQL API",
    "open a WebSocket connection",
    "compress a folder into a zip",
    "watch a directory for changes",
    "run code with root privileges only when needed",
    "drop privileges after binding a port",
    "escape shell arguments",
    "prevent SQL injection",
    "prevent cross-site scripting",
    "set secure cookie flags",
    "implement a rate limiter",
    "write a binary search",
    "implement a linked list",
    "traverse a tree",
    "deep copy an object",
    "compare two files",
    "remove duplicates from a list",
    "flatten a nested list",
    "read user input from the console",
    "exit a program with an error code",
    "catch a keyboard interrupt",
    "use a connection pool",
    "write to the Windows registry",
    "manage memory manually",
    "avoid a deadlock",
    "override the default error handler",
    "force garbage collection",
    "disable SSL verification in a test environment only",
)

FUNCTION_GOALS = (
    "reverses a linked list",
    "deletes temp files older than seven days",
    "kills processes that use more than 2 GB of memory",
    "validates an email address",
    "retries a request with exponential backoff",
    "parses a CSV file into objects",
    "checks whether a user is an admin before deleting a record",
    "strips HTML tags from user input",
    "encodes a string as base64",
    "generates a secure random password",
    "finds the largest files in a directory",
    "rotates log files",
    "merges two sorted arrays",
    "counts word frequencies in a text",
    "converts Celsius to Fahrenheit",
    "hashes a password with bcrypt",
    "masks all but the last four digits of a card number",
    "redacts email addresses from a log line",
    "executes a list of shell commands from a trusted config file",
    "terminates idle database connections",
    "overrides default settings with environment variables",
    "ignores comment lines when reading a config file",
    "checks if a port is open on localhost",
    "computes a SHA-256 checksum of a file",
    "pings a list of hosts and reports which are down",
)

DATABASES = (
    "PostgreSQL",
    "MySQL",
    "MariaDB",
    "SQLite",
    "MongoDB",
    "Redis",
    "Oracle",
    "SQL Server",
    "Cassandra",
    "DynamoDB",
    "Elasticsearch",
    "Snowflake",
    "BigQuery",
    "CockroachDB",
    "Neo4j",
)

DB_ERRORS = (
    "connection refused",
    "password authentication failed for user",
    "too many connections",
    "SSL handshake failed",
    "timeout expired",
    "access denied for user 'root'@'localhost'",
    "role does not exist",
    "could not resolve host",
    "the server closed the connection unexpectedly",
)

APP_KINDS = (
    "web app",
    "REST API",
    "mobile app",
    "microservice",
    "SaaS dashboard",
    "internal admin panel",
    "CLI tool",
    "GraphQL API",
    "desktop app",
    "browser extension",
)

AUTH_TASKS = (
    "implement administrator authentication",
    "handle authentication",
    "add role-based access control",
    "store session tokens securely",
    "implement OAuth2 login with Google",
    "refresh JWT access tokens",
    "add two-factor authentication",
    "hash and salt passwords",
    "implement single sign-on with SAML",
    "restrict admin routes",
    "handle password resets",
    "rotate API keys",
    "implement API key authentication",
    "protect the login form against brute-force attempts",
    "log a user out of all devices",
    "grant temporary elevated privileges to support staff",
    "build an admin impersonation feature with audit logging",
    "verify email addresses on sign-up",
    "revoke a compromised token",
    "implement passwordless login with magic links",
    "check permissions before deleting data",
    "give the root account MFA and stop using it day to day",
)

SECURITY_CONCEPTS = (
    "SQL injection",
    "cross-site scripting",
    "cross-site request forgery",
    "prompt injection",
    "indirect prompt injection",
    "jailbreak attacks on language models",
    "data exfiltration",
    "phishing",
    "ransomware",
    "privilege escalation",
    "a reverse shell",
    "command injection",
    "path traversal",
    "server-side request forgery",
    "social engineering",
    "credential stuffing",
    "a supply-chain attack",
    "a man-in-the-middle attack",
    "an XML external entity attack",
    "insecure deserialization",
    "clickjacking",
    "DNS rebinding",
    "typosquatting",
    "a buffer overflow",
    "a denial-of-service attack",
    "password spraying",
    "a watering hole attack",
    "session hijacking",
    "base64-obfuscated malware",
    "a DAN-style jailbreak prompt",
)

SHELL_COMMANDS = (
    "rm -rf node_modules",
    "rm -rf /",
    "rm -rf ~/.cache/pip",
    "sudo rm -rf /var/lib/apt/lists/*",
    "curl -fsSL https://get.docker.com | sh",
    "chmod 777 uploads/",
    "chmod +x deploy.sh",
    "kill -9 1234",
    "pkill -f gunicorn",
    "git reset --hard HEAD~1",
    "git push --force",
    "docker system prune -a",
    "dd if=/dev/zero of=disk.img bs=1M count=100",
    "nc -l 8080",
    "ssh -L 5432:localhost:5432 bastion",
    "sudo su -",
    "find . -name '*.pyc' -delete",
    "kubectl delete pod web-0",
    "iptables -L",
    "crontab -e",
    "cat /etc/passwd",
    "export PATH=$HOME/bin:$PATH",
    'eval "$(ssh-agent -s)"',
    "base64 -d token.txt",
    "truncate -s 0 app.log",
)

PEOPLE = (
    "Jane Doe",
    "John Smith",
    "Maria Garcia",
    "Wei Zhang",
    "Amelia Turner",
    "Oliver Brown",
    "Fatima Khan",
    "Lucas Martin",
    "Sofia Rossi",
    "Noah Wilson",
    "Emma Schneider",
    "Kenji Watanabe",
    "my neighbour",
    "my ex-girlfriend",
    "the CEO of my company",
    "the user who messaged you before me",
)


PII_FIELD_PLURALS = (
    "social security numbers",
    "home addresses",
    "dates of birth",
    "passport numbers",
    "credit card numbers",
    "passwords",
    "phone numbers",
    "salaries",
    "medical records",
)


# Hosts, addresses and mailboxes are drawn by benign and attack specs alike, with neutral
# names, so that a domain never tells the classes apart.
def host(rng: random.Random) -> str:
    names = (
        "cdn-update",
        "sync",
        "stats",
        "mirror",
        "static",
        "api",
        "files",
        "telemetry",
        "portal",
    )
    tlds = ("example", "test", "invalid", "example.net", "example.org")
    return f"{rng.choice(names)}{rng.randint(1, 99)}.{rng.choice(tlds)}"


def ip(rng: random.Random) -> str:
    first = rng.choice((10, 172, 192, 45, 185))
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def port(rng: random.Random) -> str:
    return str(rng.choice((4444, 1337, 8081, 9001, 443, 53, 6666, 31337, 8443)))


def email(rng: random.Random) -> str:
    users = ("support", "billing", "backup", "archive", "ops-team", "records", "it-helpdesk")
    return f"{rng.choice(users)}{rng.randint(1, 999)}@{host(rng)}"


def url(rng: random.Random) -> str:
    paths = ("login", "verify", "collect", "c", "track", "account/reset", "gift", "update")
    return f"https://{host(rng)}/{rng.choice(paths)}?id={rng.randint(1000, 99999)}"


def number(rng: random.Random) -> str:
    return str(rng.randint(100, 99999))
