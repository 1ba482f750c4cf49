/**
 * apsaramq-device/provisioner: the registrar role. Holds the account AccessKey, calls the OpenAPI through
 * `@alicloud/pop-core` (an optional peer dependency: install it next to apsaramq-device), and keeps device
 * credentials in a store. Never ship this part (or the account key) to devices.
 *
 * Everything of `provisioner/`, plus `registerAndConnect`, which composes the registrar with the connector and so
 * lives outside both role folders (neither imports the other). Every name is exported on purpose;
 * test/unit/public-api.test.ts holds the list.
 */
export * from './provisioner/index.js';
export { registerAndConnect, type RegisterAndConnectOptions } from './register-and-connect.js';
