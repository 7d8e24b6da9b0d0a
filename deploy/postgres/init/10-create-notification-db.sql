-- Run once by the postgres image on an empty data directory, after POSTGRES_DB (onlinestudy) is
-- created. The notification context has its own database (NOTIFICATION_DATABASE_URL, SPEC section 2).
CREATE DATABASE onlinestudy_notification;
