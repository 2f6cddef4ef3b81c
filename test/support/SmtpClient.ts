/**
 * The SMTP line client for raw-socket tests: the one replay uses (src/capture/SmtpClient.ts), so
 * tests and replay speak through the same code. Test support only.
 */
export * from "../../src/capture/SmtpClient.ts"
