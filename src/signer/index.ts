export * from './mqtt.js';
export * from './openapi.js';
