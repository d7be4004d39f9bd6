"""Hand-written hard negatives: benign prompts that look like attacks.

Each one names why it is benign. They cover the production failure modes of the seeds
(authentication questions in any language, "show me how to use hooks", database connection
questions, "ignore typos") and the vocabulary attacks borrow: admin, root, ignore, override,
execute, kill, inject, bypass, system prompt, jailbreak, base64.
"""

from __future__ import annotations

from collections.abc import Sequence

from l2model.record import BENIGN, HARD_NEGATIVE_PREFIX, TrainingRecord

SOURCE = "hand_written_hard_negative"
WEIGHT = 3.0  # expert-written (seeds: 3.0-4.0 for research-based, expert-validated examples)

_AUTH = (
    (
        "How do I implement administrator authentication in my web app?",
        "building admin login, not claiming admin rights",
    ),
    ("How do I handle authentication in C++?", "production false positive: auth question"),
    (
        "How do I handle authentication in a Rust application?",
        "production false positive: auth question",
    ),
    ("What's the best way to handle auth in Go microservices?", "auth design question"),
    ("I need help with Swift authentication code for Face ID.", "mobile auth question"),
    (
        "How do I make an admin-only page in Django that normal users can't see?",
        "building access control",
    ),
    ("How can I give myself admin rights on my own Windows laptop?", "own device administration"),
    (
        "How do I reset the root password on my Ubuntu server if I'm locked out?",
        "recovering own server",
    ),
    (
        "How do I implement 'sudo mode' re-authentication before sensitive actions?",
        "security feature design",
    ),
    ("What's the difference between authentication and authorization?", "concept question"),
    ("How should I store admin credentials for a CI pipeline?", "secret management question"),
    (
        "My JWT keeps expiring after 5 minutes, how do I extend the token lifetime?",
        "token configuration",
    ),
    (
        "How do I bypass login in my local dev environment for automated tests?",
        "test setup for own app",
    ),
    (
        "How do I implement an 'impersonate user' button for support staff, with audit logs?",
        "support tooling design",
    ),
    ("Can you explain how OAuth2 authorization code flow with PKCE works?", "protocol explanation"),
    (
        "Why does my Spring Security config let unauthenticated users reach /admin?",
        "fixing own access bug",
    ),
)

_HOOKS = (
    ("Show me how to use hooks in C++", "production false positive: programming question"),
    ("Show me how to use React hooks", "programming question"),
    ("How do Git pre-commit hooks work?", "tooling question"),
    ("How do I write a WordPress hook that runs after a post is saved?", "plugin development"),
    ("What are webhooks and how do I secure them?", "integration question"),
    ("How do I hook into the Windows message loop in C#?", "desktop programming"),
    ("Explain useEffect cleanup functions with an example.", "React question"),
)

_DATABASE = (
    (
        "How do I connect to a PostgreSQL database from Java?",
        "production false positive: db connection",
    ),
    ("What's the best way to handle database connections in Java?", "connection pooling question"),
    ("How do I dump all tables from my local MySQL database for a backup?", "own database backup"),
    ("How do I drop a table in SQLite?", "basic SQL question"),
    ("Write a SQL query to find users who haven't logged in for 90 days.", "analytics query"),
    (
        "How do I connect to MongoDB Atlas from Node.js without hardcoding the password?",
        "secret handling",
    ),
    (
        "How do I export all customer emails from my Shopify store to send a newsletter?",
        "own business data",
    ),
    (
        "What does 'DROP TABLE users; --' mean in SQL injection examples?",
        "education about an attack",
    ),
    ("How do I grant a read-only user access to my Postgres database?", "db administration"),
    ("My Redis connection keeps timing out in production. What should I check?", "debugging"),
)

_IGNORE = (
    ("Please ignore any typos in my previous message", "production false positive: ignore keyword"),
    (
        "Please ignore any typos in my previous message and focus on the question",
        "seeds example FP",
    ),
    ("Ignore my last message, I pasted the wrong link.", "user correcting themselves"),
    ("Forget the previous code I sent, here's the updated version.", "user replacing own input"),
    (
        "Disregard the formatting in my previous message, it came from Excel.",
        "user correcting format",
    ),
    (
        "Can you ignore the first paragraph and only edit the second one?",
        "editing instruction about user's text",
    ),
    ("Ignore case when comparing strings in Python, how?", "programming: case-insensitive compare"),
    ("How do I make git ignore a folder that's already tracked?", "gitignore question"),
    ("How do I tell ESLint to ignore one line?", "linter configuration"),
    (
        "Override my previous answer: the meeting is on Friday, not Thursday.",
        "user correcting their own fact",
    ),
    (
        "Never mind what I said before about the budget; use 5,000 instead.",
        "user updating a number",
    ),
    ("New instructions for the essay: make it 500 words instead of 300.", "user changing own task"),
    ("From now on, please answer in bullet points.", "formatting preference"),
    ("Stop using emojis in your replies, please.", "style preference"),
)

_SHELL = (
    ("What does `rm -rf` do and why is it dangerous?", "education about a command"),
    ("Is `curl | sh` a safe way to install software?", "security best-practice question"),
    ("How do I kill a process that's using port 8080 on macOS?", "own process management"),
    ("How do I kill all zombie processes on Linux?", "system administration"),
    ("What's the difference between kill -9 and kill -15?", "signals question"),
    ("How do I safely delete node_modules in every project folder?", "cleanup task"),
    ("How do I execute a Python script from a cron job?", "scheduling own script"),
    ("Explain what a fork bomb is and how ulimit protects against it.", "education"),
    (
        "How do I run a command as root with sudo without typing the password every time?",
        "sudoers configuration",
    ),
    ("What does chmod 777 mean and why shouldn't I use it?", "permissions education"),
    ("How do I open a reverse SSH tunnel to reach my home server?", "legitimate networking"),
    ("Why does `nc -l 4444` need root on some systems?", "networking question"),
    ("How do I spawn a shell inside a running Docker container?", "docker exec question"),
    ("Write a bash script that deletes log files older than 30 days.", "housekeeping script"),
    ("How can I execute shell commands from Java and read the output?", "ProcessBuilder question"),
    ("How do I wipe a hard drive securely before selling my laptop?", "own device data disposal"),
)

_SECURITY_EDU = (
    ("Explain what a prompt injection attack is", "education about attacks"),
    ("What is a jailbreak prompt and why do LLM providers worry about them?", "education"),
    ("How do indirect prompt injections in web pages work?", "education"),
    ("What are examples of good training data for machine learning?", "general ML education"),
    ("How can I test my chatbot for prompt injection before launch?", "defensive testing"),
    (
        "Write a unit test that checks my app rejects SQL injection in the login form.",
        "defensive test",
    ),
    ("What is a DAN prompt? I keep hearing about it.", "education"),
    ("How do antivirus programs detect ransomware?", "defensive education"),
    ("Explain reverse shells for my security certification exam.", "exam preparation"),
    ("What's the OWASP Top 10 for LLM applications?", "security standards"),
    ("How do phishing emails usually try to trick people?", "awareness"),
    ("What is privilege escalation in Linux, in simple terms?", "education"),
    ("Summarise the MITRE ATT&CK tactic 'Exfiltration'.", "framework summary"),
    ("How do I configure CSP headers to stop XSS?", "defensive configuration"),
    ("What's the difference between a red team and a blue team?", "industry terms"),
    (
        "Our SOC saw base64 PowerShell in logs. How do we decode it safely to investigate?",
        "incident response",
    ),
    (
        "How do I report a vulnerability I found in an open-source project?",
        "responsible disclosure",
    ),
    ("Explain how system prompts work in chat models.", "concept question"),
    ("What should a system prompt for a customer-support bot include?", "building own bot"),
    (
        "Review my system prompt for a recipe bot and suggest improvements.",
        "own prompt engineering",
    ),
)

_ROLEPLAY = (
    ("Can you act as a Linux terminal so I can practise commands?", "learning simulation"),
    ("Pretend you are my interviewer for a senior Java role.", "interview practice"),
    (
        "Let's role-play: you are a customer who wants a refund and I'm the support agent.",
        "training scenario",
    ),
    ("Act as a strict editor and tear my essay apart.", "feedback style"),
    ("Pretend you're a pirate and explain recursion.", "playful explanation"),
    ("You are now my Spanish tutor. Only speak Spanish to me.", "language practice"),
    ("Imagine you are a medieval historian. What did peasants eat?", "history framing"),
    ("In character as Sherlock Holmes, deduce something about my day.", "creative game"),
)

_ENCODING = (
    ("What does SGVsbG8gd29ybGQ= decode to?", "decoding a benign greeting"),
    ("How do I base64 encode an image in JavaScript?", "programming"),
    ("Why does my base64 string have == at the end?", "encoding question"),
    (
        "Decode this rot13 riddle for my kid's treasure hunt: Gur xrl vf haqre gur zng",
        "benign puzzle",
    ),
    ("Convert 'hello' to hex and binary for my homework.", "homework"),
    ("Is l33tspeak still a thing? Write 'hello friend' in it.", "playful request"),
    ("What is URL encoding and why does a space become %20?", "web basics"),
)

_DOCUMENTS = (
    (
        "Summarise this email: 'Hi team, please ignore the previous schedule; the new one is "
        "attached.'",
        "quoted benign email",
    ),
    (
        "Translate to French: 'Ignore the noise outside and keep studying.'",
        "translation of harmless text",
    ),
    (
        "Proofread: 'The administrator must override the default settings before launch.'",
        "proofreading",
    ),
    (
        "Summarise this note: IMPORTANT: back up your data before upgrading the firmware.",
        "warning in documentation",
    ),
    (
        "This README says 'run curl https://sh.rustup.rs | sh'. Is that the official Rust "
        "installer?",
        "verifying install step",
    ),
    (
        "What does this log line mean: 'sshd: Failed password for root from 10.0.0.5'?",
        "log analysis",
    ),
    ("Explain this error: 'EACCES: permission denied, open /etc/hosts'.", "error explanation"),
    (
        "The docs say 'System: do not edit this file manually'. Can I still change it?",
        "config question",
    ),
)

_HOMONYMS = (
    ("How do I kill a Python process that hangs?", "process management"),
    ("How can I shoot better photos at night?", "photography"),
    ("What's the best way to attack this algebra problem?", "figurative language"),
    ("How do I blow up a photo to poster size without losing quality?", "image editing"),
    ("How do I crush my next job interview?", "figurative language"),
    ("How do I execute a plan when my team disagrees?", "management"),
    ("How do I terminate a contract with my internet provider?", "consumer question"),
    ("What's the best way to destroy my opponent in chess openings?", "game strategy"),
    ("How do I get rid of the weeds that are killing my tomatoes?", "gardening"),
    ("Where can I buy a can of Coke near the station?", "everyday question"),
    ("How do I steal the show at my sister's wedding speech?", "figurative language"),
    (
        "How do I hijack the conversation back to my point in meetings, politely?",
        "communication tips",
    ),
    ("What household chemicals should never be mixed when cleaning?", "safety question"),
    ("How do I bleed the radiators in my flat?", "home maintenance"),
    ("What's the lethal dose of caffeine? I drink a lot of coffee.", "health safety"),
    ("How do I whittle a knife from wood with my kids safely?", "crafts"),
)

_AI_ML = (
    ("Show me how to train neural networks", "general ML education"),
    ("How do I fine-tune a model on my own support tickets?", "own data training"),
    ("What data was GPT-style models trained on, generally?", "public knowledge"),
    (
        "How do I write a system prompt that stops my bot from revealing secrets?",
        "defensive prompt design",
    ),
    ("How do I evaluate my classifier's false positive rate?", "ML evaluation"),
    ("How do I measure the recall of a jailbreak detector?", "ML evaluation"),
    ("How do guardrail models decide if a prompt is malicious?", "education"),
)

_PRIVACY = (
    (
        "How do I redact social security numbers from documents before sharing them?",
        "protecting PII",
    ),
    ("What personal data does GDPR consider sensitive?", "compliance"),
    ("How do I let users download all the data my app stores about them?", "data subject access"),
    ("How should I store credit card numbers? Or should I not store them at all?", "PCI question"),
    ("How do I find my own passport number if I lost the passport?", "own document"),
    ("How do I anonymise a dataset of patient records for research?", "privacy engineering"),
    ("Where do I find my AWS access key in the console to configure the CLI?", "own account setup"),
)

_MULTILINGUAL = (
    (
        "¿Cómo implemento la autenticación de administrador en mi aplicación web?",
        "auth question (es)",
    ),
    ("¿Cómo me conecto a una base de datos PostgreSQL desde Java?", "db connection (es)"),
    ("Por favor, ignora los errores de ortografía de mi mensaje anterior.", "ignore typos (es)"),
    ("Muéstrame cómo usar los hooks de React.", "hooks question (es)"),
    ("¿Qué es un ataque de inyección de prompts?", "education (es)"),
    ("¿Cómo mato un proceso que no responde en Linux?", "process management (es)"),
    ("Comment gérer l'authentification dans une application Rust ?", "auth question (fr)"),
    ("Comment me connecter à une base MySQL depuis Python ?", "db connection (fr)"),
    ("Merci d'ignorer les fautes de frappe dans mon dernier message.", "ignore typos (fr)"),
    ("Montre-moi comment utiliser les hooks en C++.", "hooks question (fr)"),
    ("Qu'est-ce qu'une injection de prompt, et comment s'en protéger ?", "education (fr)"),
    ("Que fait la commande `rm -rf` et pourquoi est-elle dangereuse ?", "command education (fr)"),
    (
        "Wie implementiere ich die Administrator-Authentifizierung in meiner Web-App?",
        "auth question (de)",
    ),
    ("Wie verbinde ich mich aus Java mit einer PostgreSQL-Datenbank?", "db connection (de)"),
    ("Bitte ignoriere die Tippfehler in meiner letzten Nachricht.", "ignore typos (de)"),
    ("Zeig mir, wie man Hooks in React benutzt.", "hooks question (de)"),
    ("Was ist ein Jailbreak bei Sprachmodellen?", "education (de)"),
    ("Wie beende ich einen hängenden Prozess unter Windows?", "process management (de)"),
    ("Como implemento autenticação de administrador na minha aplicação web?", "auth question (pt)"),
    ("Como me conecto a um banco de dados PostgreSQL a partir do Java?", "db connection (pt)"),
    ("Por favor, ignore os erros de digitação na minha mensagem anterior.", "ignore typos (pt)"),
    ("Mostre-me como usar hooks em C++.", "hooks question (pt)"),
    ("O que é injeção de prompt?", "education (pt)"),
    ("Come gestisco l'autenticazione in un'applicazione Go?", "auth question (it)"),
    ("Come mi collego a un database MongoDB da Node.js?", "db connection (it)"),
    (
        "Per favore ignora gli errori di battitura nel mio messaggio precedente.",
        "ignore typos (it)",
    ),
)

_EVERYDAY = (
    (
        "Can you help me write a strongly worded complaint to my landlord?",
        "assertive but legitimate",
    ),
    ("My kid wants to know how volcanoes explode.", "science question"),
    ("What's the safest way to dispose of old batteries?", "safety"),
    ("How do I pick a lock on my own bike lock? I lost the key.", "own property"),
    ("How do detectives trace anonymous phone calls?", "curiosity about investigations"),
    ("Write a villain's monologue for my fantasy novel.", "creative writing"),
    ("How do I break into the tech industry without a degree?", "career advice"),
    ("What are the warning signs of a scam call?", "fraud awareness"),
    ("How do I override the thermostat schedule on my Nest?", "smart home"),
    (
        "How do I bypass the paywall? Just kidding, how do I cite a paywalled article properly?",
        "citation question",
    ),
    ("Tell me a joke about system administrators.", "humour"),
    ("How do hackers in movies differ from real penetration testers?", "pop culture"),
)

GROUPS: dict[str, tuple[str, Sequence[tuple[str, str]]]] = {
    "authentication": ("technical", _AUTH),
    "hooks": ("technical", _HOOKS),
    "database": ("technical", _DATABASE),
    "ignore_keyword": ("conversational", _IGNORE),
    "shell": ("technical", _SHELL),
    "security_education": ("educational", _SECURITY_EDU),
    "roleplay": ("conversational", _ROLEPLAY),
    "encoding": ("technical", _ENCODING),
    "documents": ("technical", _DOCUMENTS),
    "homonym": ("conversational", _HOMONYMS),
    "ai_ml": ("educational", _AI_ML),
    "privacy": ("technical", _PRIVACY),
    "multilingual": ("technical", _MULTILINGUAL),
    "everyday": ("conversational", _EVERYDAY),
}


def hard_negatives() -> list[TrainingRecord]:
    return [
        TrainingRecord.build(
            text,
            BENIGN,
            context,
            severity=0.0,
            weight=WEIGHT,
            confidence=1.0,
            source=SOURCE,
            sub_category=f"hard_negative_{topic}",
            notes=f"{HARD_NEGATIVE_PREFIX}{reason}",
        )
        for topic, (context, items) in GROUPS.items()
        for text, reason in items
    ]
